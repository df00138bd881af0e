"""Adapters for model libraries teams already use: ``ctrlens.integrations.torchrec`` (torchrec's
``EmbeddingBagCollection`` / ``KeyedJaggedTensor`` models such as ``DLRM``) and
``ctrlens.integrations.deepctr`` (DeepCTR-Torch's ``DIN``, ``DeepFM``, ``xDeepFM``, ...).

Each is imported on its own so that ctrlens itself never needs either library; install them with
the optional extras ``ctrlens[torchrec]`` / ``ctrlens[deepctr]`` (see docs/torchrec.md and
docs/deepctr-torch.md).
"""
