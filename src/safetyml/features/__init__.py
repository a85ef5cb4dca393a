"""Point-in-time features: definitions as YAML, the aggregation engine, training frames and the online store.

Import the parts you need from their modules (``definitions``, ``frames``, ``online``, ``request``); this
package module stays empty so importing one part does not load the others.
"""
