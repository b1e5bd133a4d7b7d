"""Sources: async producers of frozen observations (blocks and their decoded logs for now)."""
