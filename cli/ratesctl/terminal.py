"""Uploaders' keys in what ratesctl prints: as a terminal may show them, and as a shell
reads them back."""

import shlex


def shown(key: str) -> str:
    """An uploader's key as a terminal may show it: control and format characters escaped
    (\\u202e would reverse the rest of the line, a newline would make a second entry), as
    Python writes them. A backslash before a u, a U or an escaped character is doubled, so
    that an escape is never the key's own text; others stay, so that most keys from Windows
    can be pasted back."""
    return "".join(_escaped(char, key[at + 1:at + 2]) for at, char in enumerate(key))


def _escaped(char: str, following: str) -> str:
    if char == "\\":
        # Before a u, a U or a character that is escaped itself, the key's own backslash
        # would read as the escape's.
        return "\\\\" if following in ("u", "U") or (following and not following.isprintable()) else char
    return char if char.isprintable() else _code(char)


def printable(message: str) -> str:
    """A message as a terminal may show it: control and format characters escaped as
    shown() escapes them, backslashes left alone. The keys in a message are shown() where
    it is built, and text that repr() or shown() escaped, or a Windows path, would read
    wrong with its backslashes doubled."""
    return "".join(char if char.isprintable() else _code(char) for char in message)


def _code(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shell_word(key: str) -> str:
    """``key`` as one shell word that gives it back, for a command to paste: quoted as
    shlex does, or, with a character shown() escapes, in $'...' (bash, zsh, ksh), that
    character as its UTF-8 bytes, so that the line holds none (a \\u202e would reverse it)."""
    if all(char.isprintable() for char in key):
        return shlex.quote(key)
    return "$'" + "".join(_shell_escaped(char) for char in key) + "'"


def _shell_escaped(char: str) -> str:
    if char in "\\'":
        return "\\" + char
    if char.isprintable():
        return char
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
