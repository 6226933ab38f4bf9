"""What is inside a snapshot, read natively: Kubernetes keyspace analysis, diff, extract."""
