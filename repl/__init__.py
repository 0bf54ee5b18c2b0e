"""The `inputlayer` shell: script mode here, interactive mode (prompt-toolkit) loaded on demand."""
