-- Search (docs/architecture.md, "Search"): the indexes the compiled filters use
-- (store/search.py). Equality on labels/params is containment (@>) and presence is ?,
-- which GIN answers; keyset pages in time order walk the btree on
-- (time, model_id, number), the same tuple the page position holds.
-- benchmarks/seed.py drops and rebuilds these around a bulk load (its _SECONDARY).
CREATE INDEX model_versions_labels ON model_versions USING gin (labels);
CREATE INDEX model_versions_params ON model_versions USING gin (params jsonb_path_ops);
CREATE INDEX model_versions_tags ON model_versions USING gin (tags);
-- run_id leads its keyset tuple: a rare run id's pages are one range, not a walk of the
-- time index dropping rows (and not partial: a generic plan of `run_id = $1` may use it)
CREATE INDEX model_versions_run_id ON model_versions (run_id, create_time, model_id, number);
CREATE INDEX model_versions_created ON model_versions (create_time, model_id, number);
CREATE INDEX model_versions_updated ON model_versions (update_time, model_id, number);
CREATE INDEX model_versions_state_created
    ON model_versions (state, create_time, model_id, number);
