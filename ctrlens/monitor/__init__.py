"""ctrlens.monitor"""
