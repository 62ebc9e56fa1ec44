"""cds.replay: offline evaluation of files and folders (`cds replay`, docs/qa-replay.md)."""
