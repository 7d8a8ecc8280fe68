"""``lmforge mask``: personal data found and masked in text: rules for e-mail addresses, phone
numbers (Chinese mobile numbers included), Chinese resident ID numbers (checksum), bank cards (Luhn)
and IP addresses, and an NER run for person, place and organization names."""
