"""pipeline: expands a pipeline file into cells and schedules them over builders and hosts."""
