"""The ``streamrec`` command: one entry point over the components' own command lines (see :mod:`streamrec.cli`)."""
