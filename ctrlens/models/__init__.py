"""ctrlens.models"""
