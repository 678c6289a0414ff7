"""ScoreSplitOptimizer: one Keras optimizer that updates mask scores with one optimizer and every
other trainable variable with another (ISS trains s by SGD at learning rate 20 while the weights
use Adam at 3e-4, Savarese et al. Sec. 4.1). It is what `model.compile` sees; its learning rate
and iteration count are those of the weights' optimizer, and a tf.train.Checkpoint of it holds the
state of both inner optimizers."""
import keras

from tf_lottery import compat

SCORES = "scores"


def is_score(variable):
    """Mask scores are the masked layers' variables named 'scores'."""
    return variable.name == SCORES


class ScoreSplitOptimizer(keras.optimizers.Optimizer):
    """`weight_optimizer` for the weights, `score_optimizer` for the variables named 'scores'."""

    def __init__(self, weight_optimizer, score_optimizer, name="score_split"):
        super().__init__(learning_rate=0.0, name=name)
        self.weight_optimizer = weight_optimizer
        self.score_optimizer = score_optimizer

    @staticmethod
    def _split(grads, variables):
        weights, scores = ([], []), ([], [])
        for grad, variable in zip(grads, variables):
            part = scores if is_score(variable) else weights
            part[0].append(grad)
            part[1].append(variable)
        return weights, scores

    @compat.no_automatic_dependency_tracking
    def build(self, var_list):
        var_list = list(var_list)
        self.weight_optimizer.build([v for v in var_list if not is_score(v)])
        self.score_optimizer.build([v for v in var_list if is_score(v)])
        super().build(var_list)

    @property
    def variables(self):
        return super().variables + self.weight_optimizer.variables + self.score_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = compat.built_variables(self)
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        for optimizer, (part_grads, part_vars) in zip(
                (self.weight_optimizer, self.score_optimizer),
                self._split(grads, trainable_variables)):
            if part_vars:
                optimizer.apply(part_grads, part_vars)
        compat.iterations_variable(self).assign_add(1)

    @property
    def iterations(self):
        return compat.iterations_variable(self)

    @property
    def learning_rate(self):
        return self.weight_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if hasattr(self, "weight_optimizer"):
            self.weight_optimizer.learning_rate = learning_rate

    def finalize_variable_values(self, var_list):
        self.weight_optimizer.finalize_variable_values(
            [v for v in var_list if not is_score(v)])
        self.score_optimizer.finalize_variable_values([v for v in var_list if is_score(v)])

    def get_config(self):
        return {"name": self.name,
                "weight_optimizer": keras.saving.serialize_keras_object(self.weight_optimizer),
                "score_optimizer": keras.saving.serialize_keras_object(self.score_optimizer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        weights = keras.saving.deserialize_keras_object(config.pop("weight_optimizer"),
                                                        custom_objects=custom_objects)
        scores = keras.saving.deserialize_keras_object(config.pop("score_optimizer"),
                                                       custom_objects=custom_objects)
        return cls(weights, scores, **config)
