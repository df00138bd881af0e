"""ctrlens.saliency"""
