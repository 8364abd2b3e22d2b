"""What a learner needs to check their work: the checks that the graded notebooks' test
cells call (autograder.checks). The instructor's tools live in `coursetools`."""
