import time, pytest
@pytest.mark.registry
def test_hang(kafka_stack):
    print(kafka_stack)
    time.sleep(300)
