"""Commands that operate on data: users, erasure and export of one user, explain, exports, reports, dead-letter redrive, the catalog, migrations."""
