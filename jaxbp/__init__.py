"""jaxbp: backpropagation, measured."""
