"""A user's own samrepro task, in the user's own package (see task.py and conf/task/ring.yaml)."""
