"""build: a worktree + build profile -> artifacts in a content-addressed store."""
