-- The `dataset` search's own index (docs/architecture.md, "Search"): one row per
-- version and name of a dataset it was trained or evaluated on (the dataset's digest,
-- and its URI), keyed like the search's pages (create_time, model_id, number), so a page
-- of `dataset = X` is one range of this index instead of a join of every version X fed.
-- Derived from lineage_edges by the trigger below, so every writer (the server, a bulk
-- load, a restore) keeps it exact; like the edges, rows are only ever added.
CREATE TABLE version_datasets (
    dataset     text COLLATE "C" NOT NULL,  -- a digest (sha256:...) or a URI
    create_time timestamptz NOT NULL,       -- the version's (never changes)
    model_id    bigint NOT NULL,
    number      bigint NOT NULL,
    PRIMARY KEY (dataset, create_time, model_id, number)
);

-- The rows of one dataset edge (version `source` trained or evaluated on dataset `target`):
-- the dataset's digest (a URI-only dataset's identity is `uri ...`, not a digest) and URI.
CREATE FUNCTION modelreg_index_dataset_edge(source bigint, target bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO version_datasets (dataset, create_time, model_id, number)
    SELECT k.dataset, v.create_time, v.model_id, v.number
    FROM lineage_nodes d
    JOIN lineage_nodes vn ON vn.node_id = source
    JOIN model_versions v ON v.model_id = vn.model_id AND v.number = vn.number
    CROSS JOIN LATERAL (VALUES (CASE WHEN d.identity LIKE 'uri %' THEN NULL ELSE d.identity END),
                               (NULLIF(d.uri, ''))) AS k(dataset)
    WHERE d.node_id = target AND d.kind = 2 AND k.dataset IS NOT NULL
    ON CONFLICT DO NOTHING
$$;

CREATE FUNCTION modelreg_index_dataset_edges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM modelreg_index_dataset_edge(NEW.from_node, NEW.to_node);
    RETURN NULL;
END $$;
CREATE TRIGGER lineage_edges_index_datasets AFTER INSERT ON lineage_edges
    FOR EACH ROW WHEN (NEW.kind IN (4, 5)) EXECUTE FUNCTION modelreg_index_dataset_edges();

-- what was recorded before this migration (benchmarks/seed.py does the same after a bulk load)
SELECT modelreg_index_dataset_edge(from_node, to_node) FROM lineage_edges WHERE kind IN (4, 5);
