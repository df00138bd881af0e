"""ctrlens.synth"""
