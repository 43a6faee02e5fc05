"""Small helpers every layer may use: atomic writes, file locks, ranking, wording."""
