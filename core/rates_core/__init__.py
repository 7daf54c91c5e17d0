"""Code shared by every deployable of the rates platform."""
