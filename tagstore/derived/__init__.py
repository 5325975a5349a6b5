"""Files derived from the catalogue: the vector index (:mod:`.index`) and the memory-mapped vector matrix
(:mod:`.matrix`). Each can be deleted and rebuilt from DuckDB; each is recorded and checked before use."""
