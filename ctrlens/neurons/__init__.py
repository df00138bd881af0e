"""ctrlens.neurons"""
