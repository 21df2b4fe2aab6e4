"""tree: git mirrors and imported Debian sources, revisions, worktree slots and patch variants.

It knows nothing of builds: its product is a worktree at (revision + variant) and the git tree id
that identifies those sources.
"""
