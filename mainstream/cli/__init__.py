"""The `mainstream` command line. Sub-commands load lazily so that light commands stay light."""
