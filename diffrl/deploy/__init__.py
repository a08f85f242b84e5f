"""Deployment: rebuild a trained policy from a run (:mod:`.policy_loading`), export it to ONNX and
TorchScript (:mod:`.export`), record evaluations and exports as MLflow child runs (:mod:`.tracking`)."""
