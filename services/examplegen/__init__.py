"""examplegen: writes training examples for tasks and corpus chunks (forge.examples.raw)."""
