"""A database URL that cannot be read is reported without repeating it: libpq and urllib
quote the part they stumble on, and with an unencoded % or / that part is the password."""

import pytest

from rates_core import db, migrate, rds_auth
from rates_core.env import ConfigError
from rates_core.errors import PermanentError

READERS = {
    "a connection": lambda url: db.connect(url, application_name="test"),
    "the migrations": migrate.pending,
    "the IAM check": rds_auth.check_url,
}


@pytest.mark.parametrize("url, why", [
    ("postgresql://rates_api:Xy7%Gq2secret@db:5432/rates", "invalid percent-encoded token"),
    ('postgresql://rates_api:ab"Gq2secret%zz@db:5432/rates', "invalid percent-encoded token"),
    # libpq reads "rates:Ab3" as host and port, and would quote the port when connecting
    ("postgresql://rates:Ab3/kL9secret@db:5432/rates", None),
    # the first @ ends the user info: the host would be "secret@db", quoted when connecting
    ("postgres://rates:Gq2@secret@db:5432/rates", None),
    # a port in Arabic-Indic digits passes \\d but not libpq, which quotes it
    ("postgresql://rates_api:\u0661\u0662\u0663/kL9secret@db:5432/rates", None),
    # "rates_api:123" is host and port, and the database "kL9secret@db:5432/rates"
    ("postgresql://rates_api:123/kL9secret@db:5432/rates", None),
])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_an_unreadable_url_is_refused_without_its_password(reader, url, why):
    with pytest.raises((PermanentError, ConfigError)) as refused:
        READERS[reader](url)
    message = str(refused.value)
    assert "secret" not in message and "Ab3" not in message and "Gq2" not in message, message
    assert "\u0661" not in message, message
    assert "URL" in message
    assert "in the password not percent-encoded?" in message, message  # the likeliest cause
    if why:
        assert why in message
    # Nor in what a traceback would print: the library's own error is not chained.
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None or refused.value.__suppress_context__


@pytest.mark.parametrize("url", ["postgresql://h1,h2:5433/db", "postgresql://u@h1:5432,h2:5433/db",
                                 "postgresql:///db?host=/var/run/postgresql",
                                 "postgresql://u@%40abstract-socket/db", "postgresql://u@[::1]:5432/db",
                                 "postgresql://u@h/db?options=-c%20x%3D1@2"])
def test_urls_libpq_takes_are_taken(url):
    assert db.parse_url(url)["dbname"] == "db"


def test_the_migrations_say_they_take_one_host():
    with pytest.raises(PermanentError, match="takes one host"):
        migrate.pending("postgresql://u@h1:5432,h2:5433/db")


@pytest.mark.parametrize("password", ["Gq2#secret", "Gq2?secret"])
def test_a_password_that_urllib_cuts_short_is_refused_by_the_migrations_with_the_likely_cause(password):
    # libpq finds the host past a # or a ?, but yoyo's urllib ends the authority there, and
    # reads "Gq2" as the port: an RDS-generated password did that at a first deploy's hook.
    assert db.parse_url(f"postgresql://rates_admin:{password}@db:5432/rates")["password"] == password
    with pytest.raises(PermanentError) as refused:
        migrate.pending(f"postgresql://rates_admin:{password}@db:5432/rates")
    message = str(refused.value)
    assert "secret" not in message and "Gq2" not in message, message
    assert message.endswith("is a #, ?, /, %, @ or : in the password not percent-encoded?"), message
