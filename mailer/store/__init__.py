"""The store: the only package with SQL. See db.py for the schema."""
