"""Analysis: kNN, OOD, scoring and agreements computed offline from stored artifacts."""
