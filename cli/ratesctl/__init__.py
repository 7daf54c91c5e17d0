"""ratesctl: the developer-facing commands of the rates platform (the Makefile calls them)."""
