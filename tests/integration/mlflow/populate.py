"""Fill an MLflow tracking server with what the import must carry (run by MLflow's own
interpreter: `python populate.py URL FILE-SIZE`; prints one JSON line of what it made).

Two models: `Fraud Detector` (a name the registry rewrites) with versions 1..6 where 3 is
deleted, tags, a stage, two aliases, a version whose run was deleted and one FAILED
registration; `ranker` with `versions` versions of one random file each (for the cut
run). Every version's files are logged to its run, registered from `runs:/`."""

import json
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient

url, size, ranker_versions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mlflow.set_tracking_uri(url)
client = MlflowClient(url)
experiment = client.create_experiment("import-test")
made: dict[str, list[dict[str, object]]] = {}


def version(model: str, payload: bytes, *, tags: dict[str, str] | None = None) -> dict[str, object]:
    run = client.create_run(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(f"{tmp}/model/sub")
        with open(f"{tmp}/model/weights.bin", "wb") as f:
            f.write(payload)
        with open(f"{tmp}/model/sub/config.json", "w") as f:
            json.dump({"model": model}, f)
        client.log_artifacts(run.info.run_id, f"{tmp}/model", "model")
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(
        model,
        f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags=tags or {},
        description=f"{model} from run {run.info.run_id}",
    )
    return {"number": int(mv.version), "run_id": run.info.run_id}


client.create_registered_model(
    "Fraud Detector", tags={"team": "risk", "tier": "gold"}, description="catches fraud"
)
fraud = [
    version("Fraud Detector", os.urandom(size) + bytes([i]), tags={"owner": "ana", "i": str(i)})
    for i in range(1, 7)
]
client.delete_model_version("Fraud Detector", "3")
client.set_model_version_tag("Fraud Detector", "2", "validation_status", "passed")
client.transition_model_version_stage("Fraud Detector", "4", "Production")
client.set_registered_model_alias("Fraud Detector", "champion", "4")
client.set_registered_model_alias("Fraud Detector", "challenger", "6")
client.delete_run(fraud[4]["run_id"])  # version 5: its run is deleted, it is still copied
made["Fraud Detector"] = fraud
client.create_registered_model("ranker")
made["ranker"] = [version("ranker", os.urandom(size)) for _ in range(ranker_versions)]
client.set_registered_model_alias("ranker", "production", str(ranker_versions))
print(json.dumps(made))
