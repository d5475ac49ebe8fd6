"""Candidates the harness must judge: deliberately wrong kernels (one bug each), correct ones written
differently, and hostile ones. Only tests import these; the judge never does."""
