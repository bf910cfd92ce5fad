"""taskgen: accepts jobs (gRPC and forge.jobs) and brainstorms embedding tasks (forge.tasks)."""
