"""HTTP itself, no I/O: the checked request every door hands the engine, its fields, dates,
directives, ranges."""
