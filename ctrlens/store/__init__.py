"""ctrlens.store"""
