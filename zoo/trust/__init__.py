"""Trust in predictions: does an input look like the model's training data (dataset shift), and
where is a prediction unsure (test-time augmentation, ensembles)?"""
