"""zfjl edge agent: records segments on a body-worn device and uploads them over MQTT without loss."""
