//! The job specs of a run: what each job runs, where and with what (dstack's job configurators).
