# The few commands a person runs. `make demo` and `make test` set everything up on
# a machine with only Python 3.11+ and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
DEMO_DIR ?= demo-run
DEMO_STAFF_PASSWORD ?= demo-organiser-password
CAMPAIGN := $(BIN)/campaign --db sqlite:///$(DEMO_DIR)/campaign.db

.PHONY: demo test lint bench faults clean serve

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/campaign doctor
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(CAMPAIGN) init
	$(CAMPAIGN) members import data/members.csv --skip-invalid --rejects $(DEMO_DIR)/members.rejects.csv
	$(CAMPAIGN) schools import data/edubasealldata.csv
	$(CAMPAIGN) employers import data/employer-contacts.csv
	$(CAMPAIGN) reps import data/mps.csv
	$(CAMPAIGN) postcodes load data/postcodes.json
	$(CAMPAIGN) resolve --offline
	$(CAMPAIGN) employers gaps
	$(CAMPAIGN) template check templates/letters/mp-inspection.txt --members
	$(CAMPAIGN) wave create "MPs: inspection and well-being" --target mp --letter mp-inspection --invite invitation \
		--asks "It asks your MP to raise the harm inspections do to school staff with the Education Secretary."
	$(CAMPAIGN) wave create "Employers: well-being assessment" --target employer --letter employer-wellbeing \
		--invite invitation --reply-days 15 --attach data/risk-assessment-framework.pdf \
		--asks "It asks your employer what they will do to protect school leaders and staff through inspections."
	$(CAMPAIGN) wave preview "MPs: inspection and well-being" --member M100003
	$(CAMPAIGN) wave preview "Employers: well-being assessment" --out $(DEMO_DIR)/preview.pdf
	$(CAMPAIGN) wave launch "MPs: inspection and well-being"
	$(CAMPAIGN) wave launch "Employers: well-being assessment"
	$(CAMPAIGN) wave status "Employers: well-being assessment"
	$(CAMPAIGN) outbox export $(DEMO_DIR)/outbox-check
	$(CAMPAIGN) letters decide "MPs: inspection and well-being" M100003 send --text-file data/edited-letter.txt
	$(CAMPAIGN) letters decide "MPs: inspection and well-being" M100005 send
	$(CAMPAIGN) letters decide "MPs: inspection and well-being" M100004 opt-out
	CAMPAIGN_OUTBOX_DIR=$(DEMO_DIR)/outbox SMTP_URL= $(CAMPAIGN) send --once --rate 1000
	$(CAMPAIGN) wave status "MPs: inspection and well-being"
	$(CAMPAIGN) letters decide "Employers: well-being assessment" M100001 send
	$(CAMPAIGN) letters decide "Employers: well-being assessment" M100005 send
	$(CAMPAIGN) letters decide "Employers: well-being assessment" M100006 send
	CAMPAIGN_OUTBOX_DIR=$(DEMO_DIR)/outbox SMTP_URL= $(CAMPAIGN) send --once --rate 1000
	@echo "Replies arrive: two employers' replies forwarded by members, a bounce and an out-of-office."
	$(CAMPAIGN) replies ingest --eml data/replies/
	$(CAMPAIGN) replies list
	$(CAMPAIGN) replies list --unmatched
	@echo "The bounce quotes no message of ours, so it waits for staff; they check it and accept it:"
	$(CAMPAIGN) replies accept 3
	$(CAMPAIGN) wave status "Employers: well-being assessment"
	CAMPAIGN_OUTBOX_DIR=$(DEMO_DIR)/outbox SMTP_URL= $(CAMPAIGN) send --once --rate 1000
	$(CAMPAIGN) chase
	@echo "Flood control: every member writes to the Secretary of State, at most 2 letters a day to that one inbox."
	@echo "The launch warns that the office would get a pile of near-identical letters; the third letter waits a day."
	$(CAMPAIGN) wave create "Secretary of State: pause the rollout" --target fixed --letter secretary-of-state \
		--invite invitation --to "Secretary of State for Education <sos@education.example>" --daily-cap 2
	$(CAMPAIGN) wave launch "Secretary of State: pause the rollout"
	$(CAMPAIGN) letters decide "Secretary of State: pause the rollout" M100001 send
	$(CAMPAIGN) letters decide "Secretary of State: pause the rollout" M100002 send
	$(CAMPAIGN) letters decide "Secretary of State: pause the rollout" M100003 send
	CAMPAIGN_OUTBOX_DIR=$(DEMO_DIR)/outbox SMTP_URL= $(CAMPAIGN) send --once --rate 1000
	@echo "The MP and employer waves reach England only: their letters say so ({# nations: england #}), and members in"
	@echo "Scotland, Wales and Northern Ireland are counted as left out. Members with no school (supply,"
	@echo "central and retired staff) write to their MP, and employer waves count them as 'no employer':"
	$(CAMPAIGN) members list --employer-status no_employer
	@echo "JCNC agenda letters: the union's officials (the Official column) write one letter per employer;"
	@echo "the official with the lowest membership number holds it, the others are named in it and counted as sharing."
	$(CAMPAIGN) wave create "JCNC: inspection on the agenda" --target employer --letter jcnc-agenda \
		--invite invitation --chaser jcnc-chaser --where official=yes --one-per-target \
		--meeting-date $$(date -d '+30 days' +%F) \
		--asks "It asks your employer to put the risk inspection poses to staff on the JCNC agenda, and to answer in writing before the meeting."
	$(CAMPAIGN) wave launch "JCNC: inspection on the agenda"
	$(CAMPAIGN) wave status "JCNC: inspection on the agenda"
	@echo "Femi (M100006) forwarded his trust's reply from a home address, so it waited unmatched; staff match it to his letter:"
	$(CAMPAIGN) replies match 2 $$($(CAMPAIGN) letters list --wave "Employers: well-being assessment" --json \
		| $(BIN)/python -c "import json, sys; print(next(r['reference'] for r in json.load(sys.stdin) if r['membership_no'] == 'M100006'))")
	@echo "An escalation wave: members whose employer refused (that trust), or has not answered within its 15 working"
	@echo "days (nobody yet), write to the Secretary of State; everyone else is left out and counted."
	$(CAMPAIGN) wave create "Secretary of State: employers who said no" --target fixed --letter secretary-of-state \
		--invite invitation --to 'Secretary of State for Education <ministers@education.example.org>' \
		--after "Employers: well-being assessment" --outcome refused,silent \
		--asks "It asks the Secretary of State for Education to pause the rollout of Ofsted's revised framework."
	$(CAMPAIGN) wave launch "Secretary of State: employers who said no"
	$(CAMPAIGN) wave status "Secretary of State: employers who said no"
	@echo "A pledge wave: no letter, one question on each member's page; two answers recorded by staff, then the counts."
	$(CAMPAIGN) wave create "Pledge: grades off our signage" --target pledge --invite pledge-invitation \
		--question "I will remove our inspection grade from our signage and letterheads"
	$(CAMPAIGN) wave launch "Pledge: grades off our signage"
	$(CAMPAIGN) letters decide "Pledge: grades off our signage" M100001 pledge
	$(CAMPAIGN) letters decide "Pledge: grades off our signage" M100002 decline
	$(CAMPAIGN) wave status "Pledge: grades off our signage"
	$(CAMPAIGN) pledges "Pledge: grades off our signage" --by region
	@echo "Serving Ofsted inspectors (the Inspector column) tell the inspectorate they are stepping down;"
	@echo "a letter that went counts as 'stepped down': two of the three send theirs."
	$(CAMPAIGN) wave create "Inspectors: stepping down" --target fixed --letter inspector-step-down \
		--invite invitation --to "Ofsted <enquiries@ofsted.example.org>" --where inspector=yes \
		--done-label "stepped down" \
		--asks "It tells Ofsted you are stepping down as an inspector while the revised framework puts staff at risk."
	$(CAMPAIGN) wave launch "Inspectors: stepping down"
	$(CAMPAIGN) letters decide "Inspectors: stepping down" M100002 send
	$(CAMPAIGN) letters decide "Inspectors: stepping down" M100009 self
	CAMPAIGN_OUTBOX_DIR=$(DEMO_DIR)/outbox SMTP_URL= $(CAMPAIGN) send --once --rate 1000
	$(CAMPAIGN) wave status "Inspectors: stepping down"
	@echo "A member's personal link (run 'make serve' and open it):"
	@$(CAMPAIGN) letters link "MPs: inspection and well-being" M100001
	@echo "Bristol City Council has no email address on record: M100018 prints the letter and posts it themselves."
	$(CAMPAIGN) letters decide "Employers: well-being assessment" M100018 self
	$(CAMPAIGN) wave pdf "Employers: well-being assessment" --out $(DEMO_DIR)/pdfs --combined
	@echo "Catherine (M100003) forwards her MP's answer from her home address: it waits in 'Replies to sort'"
	@echo "on the staff pages, with her letter suggested, for staff to match in the browser."
	$(CAMPAIGN) replies ingest --eml data/replies-later/
	$(CAMPAIGN) replies list --unmatched
	@echo
	@echo "Demo database: $(DEMO_DIR)/campaign.db; invitations delivered to the folder $(DEMO_DIR)/outbox/,"
	@echo "letters printed to $(DEMO_DIR)/pdfs/. No mail left this machine. Try: $(CAMPAIGN) letters list"
	@echo
	@echo "A staff login for the staff pages (a demo password: never use one like it for real):"
	$(CAMPAIGN) users add organiser@union.example --role organiser --password "$(DEMO_STAFF_PASSWORD)"
	@echo "Run 'make serve', open http://127.0.0.1:8000/staff/ and sign in as organiser@union.example"
	@echo "with the password $(DEMO_STAFF_PASSWORD): the waves, their letters, Replies to sort, Members."

serve: $(STAMP)
	$(CAMPAIGN) serve --port 8000

lint: $(STAMP)
	$(BIN)/ruff check engine tests bench
	$(BIN)/ruff format --check engine tests bench
	$(BIN)/lint-imports

test: $(STAMP) lint
	@$(BIN)/campaign doctor --tests
	$(BIN)/pytest $(PYTEST_ARGS)

# kill -9 of every long command, 20 times each on SQLite and PostgreSQL (`make test` kills once).
faults: $(STAMP)
	FAULTS_FULL=1 $(BIN)/pytest -s tests/test_faults.py $(PYTEST_ARGS)

# The bench extra adds the mailmerge CLI, the launch's second anchor.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info
