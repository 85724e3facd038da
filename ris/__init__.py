"""RIS: patients, orders, scheduling, HL7 and billing, plus the application shell."""
