"""Operations on stored data: erasure and export of one user, the user admin API, explain (why did X (not) get it), migrations of the Redis layout."""
