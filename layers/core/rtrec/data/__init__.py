"""Public data sets, fetched as registry wheels into a local cache and read without installing them."""
