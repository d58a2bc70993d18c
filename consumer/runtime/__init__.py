"""The thin Kafka shell around the pure core: clients, the transactional batch loop, the stages."""
