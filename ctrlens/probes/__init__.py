"""ctrlens.probes"""
