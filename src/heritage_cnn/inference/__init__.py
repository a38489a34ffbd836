"""Using a trained model: the classifier, evaluation, sorting folders, fitting and reporting the "none of these" answer."""
