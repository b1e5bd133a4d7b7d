"""The state database: one layer over SQLite (the default) or PostgreSQL, its migrations and repositories.

    database.connect(settings) -> Database      settings: config.state (DatabaseSettings), a path, or a URL
    migrations.migrate(db)                     brings it to migrations.LATEST; refuses a newer schema
    Database.transaction() / serialise(name)   one atomic unit; writers that must not interleave, ordered
    checkpoints, incidents, responses, meta,   the repositories, each over a Database
    audit, safetxs, blocklog

onguard.incidents.store.IncidentStore opens and migrates a database and is what the daemon and the CLI use."""
