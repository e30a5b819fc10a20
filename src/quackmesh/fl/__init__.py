"""Layer 2: federated learning maths — strategies, secure aggregation, DP, contribution,
the model zoo, data partitioners and local training.

Everything here is pure compute (numpy, torch): no HTTP, no database. The coordinator's
``quackmesh.coordinator.fl`` runs rounds with it; the node runs ``fl.local_train`` tasks.
"""
