-- Lineage (docs/architecture.md, "Lineage"): nodes are model versions, datasets, runs and
-- code commits; edges go from a version to what it came from (a parent version, a
-- dataset, a run, a commit) and are append-only facts, each written with its
-- `lineage.added` event. A node is found by its identity: a version by (model_id, number),
-- a dataset by its content digest, a run by system + external id, code by repository +
-- commit.
CREATE TABLE lineage_nodes (
    node_id     bigserial PRIMARY KEY,
    kind        smallint NOT NULL,            -- 1 version, 2 dataset, 3 run, 4 code
    model_id    bigint,                       -- versions only
    number      bigint,
    identity    text COLLATE "C",             -- datasets, runs, code: what finds them
    uri         text NOT NULL DEFAULT '',
    name        text NOT NULL DEFAULT '',
    version     text NOT NULL DEFAULT '',
    attributes  jsonb NOT NULL DEFAULT '{}',  -- a run's parameters
    create_time timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 1) = (model_id IS NOT NULL AND number IS NOT NULL AND identity IS NULL))
);
CREATE UNIQUE INDEX lineage_nodes_version ON lineage_nodes (model_id, number) WHERE kind = 1;
CREATE UNIQUE INDEX lineage_nodes_identity ON lineage_nodes (kind, identity) WHERE kind <> 1;
-- OpenLineage names a dataset by (namespace, name): matched through `uri` = namespace/name
CREATE INDEX lineage_nodes_uri ON lineage_nodes (kind, uri) WHERE kind = 2;

CREATE TABLE lineage_edges (
    edge_id     bigserial PRIMARY KEY,
    from_node   bigint NOT NULL REFERENCES lineage_nodes,  -- always a version
    kind        smallint NOT NULL,
    to_node     bigint NOT NULL REFERENCES lineage_nodes,
    creator     text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (from_node, kind, to_node)
);
CREATE INDEX lineage_edges_to ON lineage_edges (to_node, kind, from_node);

-- append-only: facts are never changed or removed in place
CREATE FUNCTION modelreg_lineage_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lineage edges are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER lineage_edges_append_only BEFORE UPDATE OR DELETE ON lineage_edges
    FOR EACH ROW EXECUTE FUNCTION modelreg_lineage_append_only();
