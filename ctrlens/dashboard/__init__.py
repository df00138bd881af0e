"""ctrlens.dashboard"""
