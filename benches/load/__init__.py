"""The server load benchmark (`make bench-load`, `python -m benches.load.run`): see benches/README.md."""
