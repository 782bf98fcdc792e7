"""Infrastructure: configuration, database, object and staging stores, embedded broker, keys, file modes."""
