"""Regenerates pii_labelled.jsonl (the committed labelled PII set). Values are public test numbers
(card-network test PANs, IBAN registry examples, documentation IP ranges), never real people's data."""
import json
from pathlib import Path
R = []
def pos(text, *ents): R.append({"text": text, "entities": [{"type": t, "value": v} for t, v in ents]})
def neg(text, note): R.append({"text": text, "entities": [], "note": note})

# EMAIL
for e in ["john.doe@example.com", "jane_smith+news@mail.example.org", "a.b-c@sub.domain.co.uk", "root@lists.sourceforge.net",
          "yyyy@spamassassin.taint.org", "Mary.O'Neil@example.ie", "info@xn--bcher-kva.example", "support@company.io",
          "first.last@university.edu", "noreply@github.com", "x@y.dev", "sales-team@big-corp.com", "user123@gmail.com",
          "bob%work@relay.example.net", "tom@192-168-1-1.example.com", "alerts@status.service.cloud",
          "kim.lee@dept.gov.au", "ceo@startup.ai", "webmaster@example.museum", "abuse@isp.net"]:
    pos(f"Please contact {e} for details.", ("EMAIL", e))
pos("From: Rohit Khare <khare@alumni.caltech.edu>\nTo: fork@xent.com", ("EMAIL", "khare@alumni.caltech.edu"), ("EMAIL", "fork@xent.com"))
pos("<a href=\"mailto:john@example.com\">mail me</a>", ("EMAIL", "john@example.com"))
for t in ["write to user at example dot com", "follow @zeropoint on social media", "npm install left-pad@1.3.0",
          "email me: john@localhost", "the address foo@bar is incomplete", "price is 5@ $3 each", "see git@ for details",
          "pip install package==2.0 @latest"]:
    neg(t, "not an e-mail")

# PHONE (NANP + international)
for p in ["(415) 555-2671", "415-555-2671", "415.555.2671", "415 555 2671", "+1 415 555 2671", "+1-212-555-0199",
          "1-800-275-2273", "(212) 736-5000", "617.253.1000", "+44 20 7946 0958", "+49 30 901820", "+33 1 42 68 53 00",
          "+81 3-3264-2111", "+61 2 9374 4000", "+91 22 2778 2000", "+34 915 23 56 60", "+39 06 6988 4857",
          "+27 21 403 2911", "+55 11 3094-3000", "+86 10 6552 9988"]:
    pos(f"Call us at {p} any time.", ("PHONE", p))
for lab, p in [("Tel: ", "086-8888975"), ("Mobile: ", "086 6048101"), ("Fax ", "0503 76271"), ("Phone no. ", "020 7946 0958"),
               ("tel. ", "(0)30 901820")]:
    pos(f"{lab}{p}\n", ("PHONE", p))
pos("phone 555-1234 (a 7-digit local number, not an SSN)", ("PHONE", "555-1234"))
for t in ["Released on 2002-08-22 at 12:30:45.", "Intel 80486 and 80386 chips", "the hotel 1234567 rooms",
          "Tel Aviv 2002 conference", "cell 12 of the table", "Order 123-456-7890 shipped", "ISBN 978-0-306-40615-7",
          "ISBN 0-306-40615-2", "version 10.2.3", "Zip code 94105-1234", "Invoice 2002-0822-0001", "score 3-1 at 90 minutes",
          "the years 1990-2002 saw growth", "rev 4.15.2.1234 released", "serial 12-3456789", "date 22.08.2002 12:00"]:
    neg(t, "number that is not a phone")

# CREDIT_CARD
for c in ["4111 1111 1111 1111", "4012888888881881", "5555-5555-5555-4444", "5105105105105100", "3782 822463 10005",
          "371449635398431", "6011 1111 1111 1117", "6011000990139424", "3530111333300000", "3566-0020-2036-0505",
          "30569309025904", "38520000023237", "6200000000000005", "2223 0031 2200 3222", "4000056655665556",
          "4242-4242-4242-4242", "5200828282828210", "6205500000000000004", "4917610000000000", "5454 5454 5454 5454"]:
    pos(f"Card on file: {c}, exp 12/27.", ("CREDIT_CARD", c))
for t in ["Card 4111 1111 1111 1112 was declined", "Number 1234567812345678", "ISBN 9780306406157",
          "tracking 1Z999AA10123456784", "account 4111-1111-1111-1113", "timestamp 1031234567890123",
          "order 5555 5555 5555 5555", "ref 378282246310006", "phone +44 20 7946 0958 0000"]:
    neg(t, "Luhn-invalid or not a card")

# US_SSN
for s in ["123-45-6789", "536-22-1234", "219-45-8765", "078-12-3456", "432-10-9876", "001-01-0001", "665-99-9999",
          "899-12-3456", "301-76-5432", "512-34-1122", "123 45 6789", "287-65-4321", "404-20-3030", "755-55-1234",
          "612-48-9073", "245-67-8901", "380-11-2468", "199-99-1999", "520-03-7777", "857-64-2031"]:
    pos(f"SSN: {s}", ("US_SSN", s))
for t in ["SSN 000-12-3456", "SSN 666-45-1234", "SSN 912-34-5678", "SSN 987-65-4321", "SSN 123-00-4567",
          "SSN 123-45-0000", "date 2002-08-22", "ticket 12-345-6789", "part 1234-56-789",
          "ad SSN 078-05-1120", "code 900-12-3456"]:
    neg(t, "invalid SSN or not an SSN")

# IBAN
for i in ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32", "FR14 2004 1010 0505 0001 3M02 606",
          "NL91ABNA0417164300", "ES91 2100 0418 4502 0005 1332", "IT60 X054 2811 1010 0000 0123 456",
          "BE68539007547034", "CH93 0076 2011 6238 5295 7", "AT61 1904 3002 3457 3201", "SE45 5000 0000 0583 9825 7466",
          "NO93 8601 1117 947", "DK50 0040 0440 1162 43", "FI21 1234 5600 0007 85", "PL61 1090 1014 0000 0712 1981 2874",
          "PT50 0002 0123 1234 5678 9015 4", "IE29 AIBK 9311 5212 3456 78", "LU28 0019 4006 4475 0000",
          "CZ65 0800 0000 1920 0014 5399", "GR16 0110 1250 0000 0001 2300 695", "SA03 8000 0000 6080 1016 7519"]:
    pos(f"Please transfer to IBAN {i} by Friday.", ("IBAN", i))
for t in ["IBAN DE88 3704 0044 0532 0130 00 (typo)", "GB82 WEST 1234 5698 7654 33", "code XX12 3456 7890 1234 56",
          "part number AB12CDEF34567890", "NL91 ABNA 0417 1643 01", "ref DE12 3456"]:
    neg(t, "mod-97 invalid or not an IBAN")

# IPV4
for ip in ["192.168.1.20", "10.0.0.1", "172.16.254.3", "8.8.8.8", "203.0.113.45", "64.233.160.0", "255.255.255.255",
           "127.0.0.1", "66.187.233.200", "209.85.128.1", "1.1.1.1", "100.64.0.10", "198.51.100.7", "24.12.33.4",
           "216.136.171.252", "140.211.166.134", "80.80.80.80", "5.6.7.8", "61.135.169.125", "12.34.56.78"]:
    pos(f"Received: from mail ([{ip}]) by smtp", ("IPV4", ip))
for t in ["version 1.2.3.4 released", "upgrade to v2.0.1.5 now", "address 256.1.1.1 is invalid", "release 10.0.0.1 notes",
          "OID 1.3.6.1.4.1.311", "see section 1.2.3", "value 3.14159", "build 4.15.2.1234", "999.999.999.999 nonsense",
          "10.0.0.1.5 is five parts", "IP 192.168.001.010 padded"]:
    neg(t, "version string, OID or invalid IPv4")

# IPV6
for ip in ["2001:db8::1", "fe80::1ff:fe23:4567:890a", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::1",
           "2001:db8:0:1234:0:567:8:1", "fd12:3456:789a:1::1", "2606:4700:4700::1111", "2001:4860:4860::8888",
           "ff02::1", "2001:db8:a0b:12f0::1", "::ffff:192.0.2.128", "2a03:2880:f12f:83:face:b00c:0:25de",
           "fe80::a00:27ff:fe4e:66a1", "2001:db8::ff00:42:8329", "2620:0:2d0:200::7", "2001:67c:2e8:22::c100:68b",
           "2400:cb00:2048:1::681b:9c22", "2001:db8:85a3::8a2e:370:7334", "3fff:ffff::1", "2001:500:88:200::8"]:
    pos(f"Connection from {ip} accepted", ("IPV6", ip))
for t in ["meeting at 12:30:45 today", "MAC 00:1A:2B:3C:4D:5E", "invalid a::b::c", "ratio 1:2:3", "std::vector<int>",
          "time 23:59:59.999", "Bible John 3:16:1"]:
    neg(t, "times, MACs, C++ scopes")

# URL_CREDENTIALS
for u in ["https://admin:hunter2@db.example.com", "ftp://bob:s3cret@ftp.example.org", "postgres://app:Pa55word@10.0.0.5",
          "mysql://root:toor@localhost.localdomain", "http://user:pass@proxy.corp.net", "redis://default:abc123@cache.internal.io",
          "amqp://guest:guest@rabbit.example.com", "mongodb://dbadmin:Xyz%21789@mongo0.example.com",
          "https://deploy:ghs_token@git.example.com", "smtp://mailer:Sup3rS3cret@smtp.mail.example.org",
          "sftp://ops:0ps-pw@files.example.net", "https://jane:correct-horse@intranet.example.co.uk",
          "http://api:key123@203.0.113.9", "svn+ssh://dev:devpw@svn.example.org", "https://x:y@example.com",
          "ldap://cn:admin1@ldap.example.edu", "https://bot:t0k3n@hooks.example.dev",
          "postgresql://report:r3p0rt@analytics.db.example.com", "ftp://anonymous:me@ftp.gnu.org", "http://u:p@h.example.info"]:
    pos(f"Connect with {u}/path?x=1 please", ("URL_CREDENTIALS", u))
pos("a mailto:jane@example.com link has no credentials", ("EMAIL", "jane@example.com"))
for t in ["https://example.com/user:name@x", "http://user@host.example.com/",
          "https://example.com/a:b", "ssh git@github.com:org/repo.git", "see https://docs.example.com:8443/x"]:
    neg(t, "URL without credentials")

# SECRET
secrets = ["AKIAIOSFODNN7EXAMPLE", "AKIAJ3XQ5Z7L2M4N6P8R", "ASIAY34FZKBOKMUTVV7A",
           "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "gho_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij",
           "ghs_0123456789abcdefghijABCDEFGHIJklmnop", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
           "xoxp-2222222222-333333333333-4444444444444-abcdef0123456789",
           "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"]
for s in secrets:
    pos(f"config: {s} # do not commit", ("SECRET", s))
for k, v in [("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"), ("aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
             ("client_secret", "9f8e7d6c5b4a3f2e1d0cAbCdEf123456"), ("auth_token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc"),
             ("PASSWORD", "T7#kq9!Lm2@xZ4$w"), ("secret_key", "3b7f9a1c5e8d2046ABCDEF"),
             ("STRIPE_TOKEN", "tok_1MqLx2Ab3Cd4Ef5Gh6Ij"), ("db_password", "N0tS0S3cur3P4ssw0rd"),
             ("access_key", "AbCdEf0123456789GhIjKl")]:
    pos(f'{k} = "{v}"', ("SECRET", v))
pos("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Y\n-----END RSA PRIVATE KEY-----",
    ("SECRET", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Y\n-----END RSA PRIVATE KEY-----"))
pos("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----",
    ("SECRET", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----"))
for t in ["password = changeme", "token: 1234567890123456", "secret_santa = true", 'api_key = "aaaaaaaaaaaaaaaaaaaaaaaa"',
          "the key: to success is practice", "AKIA is a prefix", "-----BEGIN PUBLIC KEY-----", "ghp_short",
          "monkey = bananabananabanana", "keyboard: mechanical-switches-rock", "password: please-enter-your-password"]:
    neg(t, "not a secret")

# US_ADDRESS
for a in ["1600 Pennsylvania Avenue NW, Washington, DC 20500", "350 Fifth Avenue, New York, NY 10118", "221 Baker Street",
          "1 Microsoft Way, Redmond, WA 98052", "10 Downing Street", "742 Evergreen Terrace", "1313 Disneyland Drive, Anaheim, CA 92802",
          "4059 Mt Lee Drive", "77 Massachusetts Avenue, Cambridge, MA 02139", "233 S Wacker Dr, Chicago, IL 60606",
          "500 Oracle Parkway", "1 Hacker Way, Menlo Park, CA 94025", "2300 Traverwood Dr, Ann Arbor, MI 48105",
          "405 Lexington Ave", "1000 Vin Scully Ave, Los Angeles, CA 90012", "600 Montgomery St, San Francisco, CA 94111",
          "12 Oak Lane", "8 Elm Court, Springfield, IL 62704", "150 Main Street Suite 200", "3500 Deer Creek Road, Palo Alto, CA 94304"]:
    pos(f"Ship it to {a} before noon.", ("US_ADDRESS", a))
for t in ["We have 3 Main Points to cover.", "In 1999 Congress passed the act.", "There are 4 Big Ideas here.",
          "Chapter 7 Street Fighting tactics", "the 2 Dr Smiths arrived", "Top 10 Ways to save",
          "about 500 People were there"]:
    neg(t, "not a street address")

# written after the detectors, as a spot check of formats they were not tuned on
for text, t, v in [("Contact: JOHN.DOE@EXAMPLE.COM today", "EMAIL", "JOHN.DOE@EXAMPLE.COM"),
                   ("<mailto:x@y.co>", "EMAIL", "x@y.co"), ("write user@mail.example.co.jp", "EMAIL", "user@mail.example.co.jp"),
                   ("call +1 (415) 555-2671 now", "PHONE", "+1 (415) 555-2671"), ("(800)555-0199", "PHONE", "(800)555-0199"),
                   ("+44 (0)20 7946 0958", "PHONE", "+44 (0)20 7946 0958"), ("+353 87 240 6691", "PHONE", "+353 87 240 6691"),
                   ("tel:+14155552671", "PHONE", "+14155552671"), ("card=4111111111111111&x=1", "CREDIT_CARD", "4111111111111111"),
                   ("pay 5555 5555 5555 4444.", "CREDIT_CARD", "5555 5555 5555 4444"), ("SSN#536-22-1234", "US_SSN", "536-22-1234"),
                   ("host=10.1.2.3:8080", "IPV4", "10.1.2.3"), ("[2001:db8::1]:443", "IPV6", "2001:db8::1"),
                   ("123 N Main St, Springfield, IL 62701", "US_ADDRESS", "123 N Main St, Springfield, IL 62701"),
                   ("IBAN: GB29NWBK60161331926819", "IBAN", "GB29NWBK60161331926819"),
                   ("token=ghp_16C7e42F292c6912E7710c838347Ae178B4a", "SECRET", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
                   ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SECRET",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                   ("postgres://svc:Zx9!pw@db1.internal.example.com:5432/app", "URL_CREDENTIALS",
                    "postgres://svc:Zx9!pw@db1.internal.example.com")]:
    pos(text, (t, v))

with open(Path(__file__).with_name("pii_labelled.jsonl"), "w") as f:
    for r in R:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(R))
