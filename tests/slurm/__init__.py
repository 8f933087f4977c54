"""A throwaway one-node SLURM cluster and a toy workflow for testing profiles/slurm (see harness.py)."""
