def increment(number):
    return {"number": number + 1}
